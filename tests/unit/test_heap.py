import gc

from agentmesh import freeze_startup_heap


def test_the_startup_heap_leaves_the_collectors_walk_and_later_objects_do_not() -> None:
    startup = [[i] for i in range(1000)]
    try:
        freeze_startup_heap()
        later = [[i] for i in range(10)]
        assert gc.get_freeze_count() >= len(startup)
        walked = {id(o) for o in gc.get_objects()}
        assert id(startup[0]) not in walked and id(startup) not in walked
        assert id(later[0]) in walked
    finally:
        gc.unfreeze()
