"""llama.cpp's own CPU kernels, called through ctypes: the oracle for quant.py's int8 path.

llama-cpp-python ships libggml-cpu, which exports `ggml_get_type_traits_cpu(type)`: for each weight type, the
function that quantizes an activation vector (`from_float`, into the type `vec_dot_type`) and the dot product of
one weight row with it (`vec_dot`), the very code llama.cpp runs on this CPU. ggml's public header declares them
"for tests and benchmarks"; this module uses them for exactly that.
"""
import ctypes
import os

import numpy as np
import gguf

FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                           ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class TypeTraitsCPU(ctypes.Structure):  # struct ggml_type_traits_cpu in ggml-cpu.h
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p), ("vec_dot_type", ctypes.c_int),
                ("nrows", ctypes.c_int64)]


def _libs():
    import llama_cpp  # loads libggml-base and libggml-cpu with it
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"))
    base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(TypeTraitsCPU)
    cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    base.ggml_row_size.restype = ctypes.c_size_t
    base.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    cpu.ggml_cpu_init()  # fills ggml's fp16 tables
    return cpu, base


CPU, BASE = _libs()


def vec_dot_type(qtype):
    """The GGMLQuantizationType that ggml rounds activations to for weights of type qtype."""
    return gguf.GGMLQuantizationType(CPU.ggml_get_type_traits_cpu(int(qtype)).contents.vec_dot_type)


def quantize_x(x, qtype):
    """x float32 [cols] -> the raw bytes ggml makes of it for weights of type qtype (its vec_dot_type blocks)."""
    x = np.ascontiguousarray(x, np.float32)
    vtype = vec_dot_type(qtype)
    out = np.zeros(BASE.ggml_row_size(int(vtype), x.size), np.uint8)
    from_float = CPU.ggml_get_type_traits_cpu(int(vtype)).contents.from_float
    FROM_FLOAT(from_float)(x.ctypes.data, out.ctypes.data, x.size)
    return out


def matvec(raw, qtype, x):
    """raw [rows, bytes_per_row] weights of type qtype, x float32 [cols] -> float32 [rows]: ggml's vec_dot of
    each row with x quantized by ggml."""
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(len(raw), -1)
    y = quantize_x(x, qtype)
    vec_dot = VEC_DOT(CPU.ggml_get_type_traits_cpu(int(qtype)).contents.vec_dot)
    out = np.zeros(len(raw), np.float32)
    s = ctypes.c_float()
    for r in range(len(raw)):
        vec_dot(int(np.asarray(x).size), ctypes.addressof(s), 0, raw[r].ctypes.data, 0, y.ctypes.data, 0, 1)
        out[r] = s.value
    return out
