"""LLVM operations Numba does not expose, for the feature kernels: prefetch and bit casts.

* ``prefetch``: a batch of ticks names its symbols in advance, so the feature kernel can
  request the state of the tick a few positions ahead while it computes the current one:
  the misses of several ticks then overlap instead of queueing one after the other. It is
  LLVM's ``llvm.prefetch`` (x86 ``prefetchw``: the line will be written); it never faults,
  whatever the address.
* ``as_int`` / ``as_float``: the integer fields of a symbol's record live in the same
  float64 array as its floats (``app.state``), read and written through these bit casts
  (no instruction). Through one array, the compiler sees every field at a fixed offset
  of one base, so a store to one field does not force the others to be reloaded, as it
  would through a second (int64) view of the same memory.
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


@intrinsic
def _as_int(typingctx: Any, value: Any) -> Any:
    if value != types.float64:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(value), codegen


@intrinsic
def _as_float(typingctx: Any, value: Any) -> Any:
    if not isinstance(value, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        word = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.bitcast(word, ir.DoubleType())

    return types.float64(value), codegen


# The int64 whose bits a float64 word holds, and the float64 word holding an integer's bits.
as_int = cast("Callable[[Any], int]", _as_int)
as_float = cast("Callable[[Any], float]", _as_float)
