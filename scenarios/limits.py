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
#: frames one ``micromill export-frames`` writes (two PNGs each; the paper labelled 3,294 images)
MAX_EXPORT_FRAMES = 20000
#: ``micromill export-frames --every``: keep every N-th recorded frame
MAX_EXPORT_EVERY = 1_000_000
#: labelled images one ``micromill train keypoints --data`` loads (held in memory: 20,000 images of
#: 960 x 540 px are 31 GB)
MAX_LABELLED_IMAGES = 20000
#: images per training batch (``micromill train keypoints --batch-size``)
MAX_BATCH_SIZE = 256
#: cases one ``micromill falsify`` may run while searching (``--budget``) and while shrinking
#: (``--shrink-budget``)
MAX_FALSIFY_CASES = 100000
#: ``micromill train --budget-min``: at most a week (minutes)
MAX_TRAIN_BUDGET_MIN = 7 * 24 * 60
#: ``micromill sas-twin --image-rate-hz``: at most the MSCS's fastest frame rate and then some (Hz)
MAX_IMAGE_RATE_HZ = 100.0
#: ``micromill falsify --time-budget``: at most a week (seconds)
MAX_FALSIFY_SECONDS = 7 * 24 * 3600
