"""Bounds on the counts a user can type, in one place (suite files and the CLI both read them;
this module imports nothing, so ``micromill --help`` stays fast)."""

#: cases of one suite run (``[suite] cases``, ``micromill run --cases``)
MAX_CASES = 100000
#: worker processes (``micromill run --workers``, ``micromill train --workers``)
MAX_WORKERS = 64
#: rendered training scenes (``micromill train --scenes``): the training data is held in memory,
#: and about 2,000 scenes of the largest recipe fit in 24 GiB
MAX_TRAIN_SCENES = 2000
#: planned epochs per network (``micromill train --epochs``)
MAX_EPOCHS = 1000
