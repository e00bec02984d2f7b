"""Software prefetch for Numba kernels: ask for a cache line before the loop needs it.

A batch of ticks names its symbols in advance, so the feature kernel can request the
state of the tick a few positions ahead while it computes the current one: the misses
of several ticks then overlap instead of queueing one after the other. ``prefetch`` is
LLVM's ``llvm.prefetch`` intrinsic (x86 ``prefetchw``: the line will be written); it
never faults, whatever the address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_LOCALITY_ALL_LEVELS = 3
_DATA_CACHE = 1
_FOR_WRITE = 1


@intrinsic
def _prefetch(typingctx: Any, array: Any, row: Any, col: Any) -> Any:
    """Prefetch the cache line holding ``array[row, col]`` (a 2-D array) for writing."""
    if not isinstance(array, types.Array) or array.ndim != 2:
        return None
    sig = types.void(array, row, col)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(array)(context, builder, args[0])
        index = [context.cast(builder, v, t, types.intp)
                 for v, t in zip(args[1:], signature.args[1:], strict=True)]  # fmt: skip
        ptr = cgutils.get_item_pointer(context, builder, array, ary, index, wraparound=False)
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(
            fn,
            [builder.bitcast(ptr, byte_ptr), i32(_FOR_WRITE), i32(_LOCALITY_ALL_LEVELS),
             i32(_DATA_CACHE)],
        )  # fmt: skip
        return context.get_dummy_value()

    return sig, codegen


# As kernels call it (Numba passes the typing context itself).
prefetch = cast("Callable[[Any, Any, Any], None]", _prefetch)
