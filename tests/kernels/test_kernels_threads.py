"""Kernels launched from two threads at once, as the pipeline does (kernel 1 on the decode
thread, the tail on the network thread). Every launch holds ``LAUNCH_LOCK``: a kernel's
first launch compiles it, and neither Triton's JIT caches nor its interpreter are made for
concurrent use (without the lock this test fails under the interpreter)."""

import threading

import torch

import nvpipe.kernels as K
from conftest import TRITON_DEVICE, triton_call

ROUNDS = 6


def test_two_threads_launching_kernels_get_the_references_results():
    g = torch.Generator().manual_seed(21)
    frame = torch.randint(0, 256, (27 + 14, 34), dtype=torch.uint8, generator=g)
    coeff_a, coeff_b = torch.randn(4, 7, 9, generator=g), torch.randn(4, 7, 9, generator=g) * 0.4
    src = torch.rand(3, 27, 34, generator=g)
    rgb_want = K.nv12_to_rgb_reference(frame, out_dtype=torch.float32, height=27, width=34)
    tail_want = K.matting_tail_reference(coeff_a, coeff_b, src, output="rgba")
    errors, barrier = [], threading.Barrier(2)

    def worker(call, want):
        try:
            barrier.wait()
            for _ in range(ROUNDS):
                got = call()
                torch.testing.assert_close(got.float(), want.float(), atol=1e-5, rtol=0)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [
        threading.Thread(target=worker, args=(lambda: triton_call(
            K.nv12_to_rgb, frame, out_dtype=torch.float32, height=27, width=34), rgb_want)),
        threading.Thread(target=worker, args=(lambda: triton_call(
            K.matting_tail, coeff_a, coeff_b, src, output="rgba"), tail_want)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, f"{len(errors)} failures on {TRITON_DEVICE}, first: {errors[0]!r}"
