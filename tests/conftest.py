import pytest

from scenes.robot_description import RobotDescription
from scenes.spec import load_scene


@pytest.fixture(scope="session")
def scene():
    return load_scene()


@pytest.fixture(scope="session")
def robot(scene):
    return RobotDescription(scene.robot.description_path)


@pytest.fixture(scope="session")
def world(scene):
    from twin.world import TwinWorld

    w = TwinWorld(scene, seed=0)
    yield w
    w.close()
