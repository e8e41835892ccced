"""serving.batcher: requests that wait together run as one call; a bad one fails alone."""

import asyncio
import threading

import numpy as np
import tensorflow as tf

from serving import batcher as batcher_lib


def test_batcher_joins_waiting_requests_up_to_max_batch_and_isolates_a_bad_one():
    gate, sizes = threading.Event(), []

    def double(x):  # A stand-in signature that waits at the gate.
        gate.wait(timeout=30)
        sizes.append(tuple(x.shape))
        tf.debugging.assert_non_negative(x, message="x: negative")
        return {"y": x * 2}

    spec = tf.TensorSpec([None, None], tf.float32)
    signature = batcher_lib.Signature("double", double, {"x": spec}, {"y": spec})
    batcher = batcher_lib.Batcher({"double": signature}, max_batch=4)

    async def scenario():
        def submit(rows):
            return asyncio.create_task(batcher.predict("double", {"x": np.array(rows, np.float32)}))

        busy = []
        for rows in ([[1]], [[2]]):  # Both workers take one and wait at the gate.
            busy.append(submit(rows))
            await asyncio.sleep(0.05)
        waiting = [submit(rows) for rows in ([[3]], [[4], [5]], [[-1]], [[6, 6]], [[7]])]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*busy, *waiting, return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert isinstance(results[4], tf.errors.InvalidArgumentError), results[4]
    assert "x: negative" in results[4].message
    expected = [[[2]], [[4]], [[6]], [[8], [10]], None, [[12, 12]], [[14]]]
    for result, want in zip(results, expected):
        if want is not None:
            np.testing.assert_array_equal(result["y"], want)
    # [3], [4, 5], [-1] waited together (4 rows, max_batch): one call that failed, then
    # one call each; [6, 6] is another width, so it and [7] ran on their own.
    assert sorted(sizes) == sorted([(1, 1), (1, 1), (4, 1), (1, 1), (2, 1), (1, 1), (1, 2),
                                    (1, 1)])
    assert batcher.calls == 8 and batcher.requests == 7
