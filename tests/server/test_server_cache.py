"""ByteLRU: the embedding cache's bound is in bytes over all sessions."""

import threading

from medsamkit.server.cache import ByteLRU


def test_least_recently_used_entries_go_first_when_the_bytes_pass_the_bound():
    cache = ByteLRU(100, len)
    cache.put(("a", 1), b"x" * 40)
    cache.put(("a", 2), b"x" * 40)
    assert cache.get(("a", 1)) is not None  # now ("a", 2) is the least recently used
    cache.put(("b", 1), b"x" * 40)
    assert cache.get(("a", 2)) is None
    assert cache.get(("a", 1)) == b"x" * 40 and cache.get(("b", 1)) == b"x" * 40
    assert cache.bytes == 80 and len(cache) == 2


def test_a_value_larger_than_the_bound_is_not_kept_and_replacing_a_key_recounts_it():
    cache = ByteLRU(10, len)
    cache.put(("a", 1), b"x" * 11)
    assert len(cache) == 0 and cache.bytes == 0
    cache.put(("a", 1), b"x" * 6)
    cache.put(("a", 1), b"x" * 3)
    assert cache.bytes == 3


def test_drop_owner_removes_only_that_sessions_entries():
    cache = ByteLRU(1000, len)
    for owner in ("a", "b"):
        for i in range(3):
            cache.put((owner, i), b"x" * 10)
    assert cache.drop_owner("a") == 3
    assert len(cache) == 3 and cache.bytes == 30
    assert all(cache.get(("b", i)) for i in range(3))


def test_concurrent_puts_keep_the_byte_count_exact():
    cache = ByteLRU(500, len)

    def work(owner):
        for i in range(200):
            cache.put((owner, i % 17), b"x" * (i % 7 + 1))
            cache.get((owner, (i * 3) % 17))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.bytes == sum(len(v) for v, _ in cache._items.values()) <= 500
