"""TileCache: a thread-safe LRU of uint8 tiles, bounded in bytes."""

import threading

import numpy as np
import pytest

from engine.cache import TileCache

TILE = np.zeros((128, 128, 3), np.uint8)  # 49,152 bytes


def test_get_marks_a_tile_recently_used_so_the_oldest_unused_one_is_evicted():
    cache = TileCache(max_bytes=3 * TILE.nbytes)
    for key in "abc":
        cache.put(key, TILE)
    assert cache.get("a") is not None  # now b is the least recently used
    cache.put("d", TILE)
    assert "b" not in cache
    assert all(key in cache for key in "acd")
    assert len(cache) == 3


def test_a_long_strip_of_new_tiles_never_exceeds_the_byte_bound():
    cache = TileCache(max_bytes=10 * TILE.nbytes + 1000)
    for tx in range(500):
        cache.put((0, tx, 0), np.full((128, 128, 3), tx % 256, np.uint8))
        assert cache.bytes_used <= cache.max_bytes
    assert len(cache) == 10
    assert cache.bytes_used == 10 * TILE.nbytes
    assert [k for k in [(0, tx, 0) for tx in range(490, 500)] if k not in cache] == []


def test_shrinking_max_bytes_evicts_at_once():
    cache = TileCache(max_bytes=8 * TILE.nbytes)
    for key in range(8):
        cache.put(key, TILE)
    cache.max_bytes = 3 * TILE.nbytes
    assert len(cache) == 3 and cache.bytes_used == 3 * TILE.nbytes
    assert [k for k in range(8) if k in cache] == [5, 6, 7]


def test_replacing_a_key_counts_its_bytes_once():
    cache = TileCache(max_bytes=4 * TILE.nbytes)
    cache.put("a", TILE)
    cache.put("a", np.ones_like(TILE))
    assert len(cache) == 1 and cache.bytes_used == TILE.nbytes
    assert cache.get("a")[0, 0, 0] == 1


def test_stored_tiles_are_read_only_copies():
    source = np.zeros((256, 256, 3), np.uint8)
    stored = TileCache().put("a", source[:128, :128])
    assert stored.base is None and stored.nbytes == TILE.nbytes
    assert not stored.flags.writeable
    source[0, 0] = 9
    assert stored[0, 0, 0] == 0
    assert source.flags.writeable


def test_hits_and_misses_are_counted_and_clear_empties_the_cache():
    cache = TileCache()
    cache.put("a", TILE)
    cache.get("a"), cache.get("b"), cache.get("a")
    assert (cache.hits, cache.misses) == (2, 1)
    cache.clear()
    assert len(cache) == 0 and cache.bytes_used == 0 and cache.get("a") is None


def test_rejects_non_uint8_tiles_and_negative_bounds():
    with pytest.raises(TypeError):
        TileCache().put("a", TILE.astype(np.float32))
    with pytest.raises(ValueError):
        TileCache(max_bytes=-1)


def test_concurrent_puts_and_gets_keep_the_byte_count_exact():
    cache = TileCache(max_bytes=20 * TILE.nbytes)

    def work(offset: int) -> None:
        for i in range(300):
            cache.put((offset, i % 40), TILE)
            cache.get((offset, (i * 7) % 40))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.bytes_used == len(cache) * TILE.nbytes <= cache.max_bytes
