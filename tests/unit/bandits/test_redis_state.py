import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from learnloop.bandits import ToolSelector, make_policy
from learnloop.bandits.contexts import HashedTextFeaturizer

pytestmark = pytest.mark.redis

if shutil.which("redis-server") is None and not os.environ.get("CI"):
    pytest.skip(
        "redis-server binary not found (apt-get install redis-server)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def state(url, name, **kw):
    from learnloop.bandits.redis_state import RedisPolicyConfig, RedisPolicyState, connect_redis

    return RedisPolicyState(connect_redis(url), RedisPolicyConfig(name=name, **kw))


def _worker(url, name, n, seed):
    selector = ToolSelector(
        make_policy("epsilon_greedy"), tools=["a", "b", "c"], seed=seed, shared=state(url, name)
    )
    for i in range(n):
        selector.update(selector.choose("grep logs" if i % 2 else "run tests"), 1.0)


def _check_counts(shared, expected):
    assert shared.num_updates() == expected
    counts = 0
    for key in shared.client.scan_iter(match=f"{shared._glob_base}:ctx:*"):
        counts += sum(int(v) for f, v in shared.client.hgetall(key).items() if f.startswith(b"n:"))
        assert 7 * 86400 - 60 < shared.client.ttl(key) <= 7 * 86400  # the default TTL
    assert counts == expected


def test_eight_clients_in_threads_lose_no_update(redis_url):
    """Eight connections updating at once: the Lua update is atomic on the server."""
    shared = state(redis_url, "threads")
    shared.clear()
    n = 300
    threads = [
        threading.Thread(target=_worker, args=(redis_url, "threads", n, s)) for s in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    _check_counts(shared, 8 * n)
    replica = ToolSelector(make_policy("epsilon_greedy"), tools=["a", "b", "c"], shared=shared)
    replica.sync()
    assert replica.policy.epsilon == 0.01 and replica.num_updates == 8 * n


@pytest.mark.slow
def test_eight_processes_lose_no_update_and_ttl_is_set(redis_url):
    shared = state(redis_url, "many")
    shared.clear()
    n = 400
    ctx = mp.get_context("forkserver")  # one import in the server, not one per worker
    ctx.set_forkserver_preload(["learnloop.bandits", "learnloop.bandits.redis_state"])
    procs = [ctx.Process(target=_worker, args=(redis_url, "many", n, s)) for s in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    _check_counts(shared, 8 * n)
    # the shared epsilon decayed once per update: 0.1 * 0.995^3200 is below the floor
    replica = ToolSelector(make_policy("epsilon_greedy"), tools=["a", "b", "c"], shared=shared)
    replica.sync()
    assert replica.policy.epsilon == 0.01 and replica.num_updates == 8 * n


@pytest.mark.parametrize("name", ["ucb1", "thompson", "linear_thompson", "squarecb"])
def test_shared_update_equals_local_update_and_restart_picks_it_up(redis_url, name):
    shared = state(redis_url, f"eq-{name}")
    shared.clear()
    featurizer = HashedTextFeaturizer(dim=64) if name in ("linear_thompson", "squarecb") else None
    kw = {"dim": 64} if featurizer else {}
    local = ToolSelector(make_policy(name, **kw), featurizer=featurizer, tools=["a", "b"], seed=1)
    remote = ToolSelector(
        make_policy(name, **kw), featurizer=featurizer, tools=["a", "b"], seed=1, shared=shared
    )
    rng = np.random.default_rng(0)
    for i in range(30):
        text = f"read file {i % 3}"
        c1, c2 = local.choose(text), remote.choose(text)
        assert c1.tool == c2.tool
        r = float(rng.random() < 0.6)
        local.update(c1, r)
        remote.update(c2, r)
    restarted = ToolSelector(
        make_policy(name, **kw), featurizer=featurizer, tools=["b", "a"], shared=shared
    )
    restarted.sync()
    for text in ("read file 0", "read file 2"):
        for tool, value in local.values(text).items():
            assert remote.values(text)[tool] == pytest.approx(value)
            assert restarted.values(text)[tool] == pytest.approx(value)
    assert restarted.num_updates == 30


def test_update_survives_a_script_flush_and_names_are_checked(redis_url):
    from learnloop.bandits.redis_state import RedisPolicyConfig
    from learnloop.errors import ConfigError

    shared = state(redis_url, "flush")
    shared.clear()
    selector = ToolSelector(make_policy("epsilon_greedy"), tools=["a"], shared=shared)
    selector.update(selector.choose("run it"), 1.0)
    shared.client.script_flush()  # as after a server restart
    selector.update(selector.choose("run it"), 1.0)
    assert shared.num_updates() == 2
    # Q after two rewards of 1 from 0 with alpha 0.1: 0.1, then 0.1 + 0.1 * 0.9 = 0.19
    assert selector.policy.entry("execute", 0)["q"] == pytest.approx(0.19)
    for bad in ("", "a:b", "{x}"):
        with pytest.raises(ConfigError):
            RedisPolicyConfig(name=bad)
