"""The dynamic batcher on its own (plain asyncio.run; no pytest-asyncio needed)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from agilenn.server.batcher import Batcher, Closed, Expired, QueueFull


class Model:
    def __init__(self, fail_on=None):
        self.batches = []
        self.fail_on = fail_on

    def __call__(self, x):
        self.batches.append(len(x))
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise RuntimeError("boom")
        return x * 2


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture(scope="module")
def executor():
    with ThreadPoolExecutor(1) as ex:
        yield ex


def test_results_and_max_batch(executor):
    async def main():
        model = Model()
        b = Batcher(model, executor, max_batch_size=4, max_queue_delay_s=0.0)
        b.start()
        futures = [b.submit(np.full(3, i, np.float32)) for i in range(10)]
        results = await asyncio.gather(*futures)
        await b.close()
        return model, results

    model, results = run(main())
    assert max(model.batches) <= 4 and sum(model.batches) == 10
    assert model.batches[0] == 4  # all ten were queued before the worker ran: full batches
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r.output, np.full(3, 2 * i, np.float32))
        assert r.batch_size in model.batches and r.queue_s >= 0 and r.compute_s >= 0


def test_batch_size_one_turns_batching_off(executor):
    async def main():
        model = Model()
        b = Batcher(model, executor, max_batch_size=1, max_queue_delay_s=1.0)
        b.start()
        await asyncio.gather(*[b.submit(np.zeros(2, np.float32)) for _ in range(5)])
        await b.close()
        return model

    assert run(main()).batches == [1] * 5


def test_a_full_batch_does_not_wait_for_the_delay(executor):
    async def main():
        model = Model()
        b = Batcher(model, executor, max_batch_size=3, max_queue_delay_s=3600.0)
        b.start()
        await asyncio.sleep(0)
        first = b.submit(np.zeros(1, np.float32))
        await asyncio.sleep(0.01)  # the worker is now waiting for the batch to fill
        rest = [b.submit(np.zeros(1, np.float32)) for _ in range(2)]
        await asyncio.gather(first, *rest)  # would hang for an hour if the full batch waited
        await b.close()
        return model

    assert run(main()).batches == [3]


def test_the_delay_gathers_late_arrivals(executor):
    async def main():
        model = Model()
        b = Batcher(model, executor, max_batch_size=8, max_queue_delay_s=0.5)
        b.start()
        futures = [b.submit(np.zeros(1, np.float32))]
        for _ in range(3):
            await asyncio.sleep(0.001)
            futures.append(b.submit(np.zeros(1, np.float32)))
        await asyncio.gather(*futures)
        await b.close()
        return model

    assert run(main()).batches == [4]


def test_expired_cancelled_and_queue_full(executor):
    async def main():
        model = Model()
        b = Batcher(model, executor, max_batch_size=8, max_queue_delay_s=0.0, max_queue_size=3)
        expired = b.submit(np.zeros(1, np.float32), deadline=time.perf_counter() - 1)
        cancelled = b.submit(np.zeros(1, np.float32))
        ok = b.submit(np.zeros(1, np.float32))
        with pytest.raises(QueueFull):
            b.submit(np.zeros(1, np.float32))
        cancelled.cancel()
        b.start()
        with pytest.raises(Expired):
            await expired
        await ok
        await b.close()
        with pytest.raises(Closed):
            b.submit(np.zeros(1, np.float32))
        return model

    assert run(main()).batches == [1]


def test_a_failing_batch_fails_only_its_requests(executor):
    async def main():
        model = Model(fail_on=1)
        b = Batcher(model, executor, max_batch_size=2, max_queue_delay_s=0.0)
        futures = [b.submit(np.zeros(1, np.float32)) for _ in range(4)]
        b.start()
        results = await asyncio.gather(*futures, return_exceptions=True)
        await b.close()
        return results

    results = run(main())
    assert [isinstance(r, RuntimeError) for r in results] == [True, True, False, False]


def test_close_finishes_queued_work(executor):
    async def main():
        b = Batcher(Model(), executor, max_batch_size=2, max_queue_delay_s=3600.0)
        b.start()
        futures = [b.submit(np.zeros(1, np.float32)) for _ in range(5)]
        await b.close()  # does not wait out the delay
        return [f.done() and not f.exception() for f in futures]

    assert run(main()) == [True] * 5


def test_a_model_returning_the_wrong_number_of_rows_fails_the_batch_not_the_worker(executor):
    calls = []

    def model(x):
        calls.append(len(x))
        return x[:1] if len(calls) == 1 else x

    async def main():
        b = Batcher(model, executor, max_batch_size=2, max_queue_delay_s=0.0)
        futures = [b.submit(np.zeros(1, np.float32)) for _ in range(4)]
        b.start()
        results = await asyncio.gather(*futures, return_exceptions=True)
        await b.close()
        return results

    results = run(main())
    assert [isinstance(r, RuntimeError) for r in results] == [True, True, False, False]
