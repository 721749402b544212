"""quant.read_gguf against gguf-py's GGUFReader, and its refusals of malformed files."""
import numpy as np
import pytest
import gguf

import quant
import models


def assert_same_as_gguf_py(path):
    meta, tensors = quant.read_gguf(path)
    reader = gguf.GGUFReader(path)
    expected = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert meta == expected
    assert set(tensors) == {t.name for t in reader.tensors}
    for t in reader.tensors:
        ours = tensors[t.name]
        assert ours.qtype == t.tensor_type
        assert ours.shape == tuple(int(n) for n in reversed(t.shape))
        assert ours.data.dtype == t.data.dtype and ours.data.shape == t.data.shape
        assert np.array_equal(ours.data.view(np.uint8), t.data.view(np.uint8))


def test_smollm2_same_as_gguf_py(smollm2_path):
    assert_same_as_gguf_py(smollm2_path)


@pytest.mark.parametrize("name", ["f32", "bf16-tied", "q4_1", "q3_k_m", "q4_k_m"])
def test_tiny_same_as_gguf_py(name, tiny_models):
    assert_same_as_gguf_py(tiny_models[name][0])


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    models.write_tiny_llama(path, qtype="Q8_0", n_layers=1)
    return path


def test_truncated_files_are_refused(good_file, tmp_path):
    data = good_file.read_bytes()
    _, tensors = quant.read_gguf(good_file)
    # cut inside the header, the metadata, the tensor infos, and the tensor data
    for cut in [0, 3, 10, 30, 200, 2000, len(data) // 2, len(data) - 1]:
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            quant.read_gguf(bad)


def test_bad_header_fields_are_refused(good_file, tmp_path):
    data = bytearray(good_file.read_bytes())
    cases = {
        "magic": (0, b"GGUX"),
        "version": (4, (7).to_bytes(4, "little")),
        "tensor count": (8, (1 << 60).to_bytes(8, "little")),
        "key count": (16, (1 << 60).to_bytes(8, "little")),
        "first key length": (24, (1 << 62).to_bytes(8, "little")),
    }
    for what, (offset, patch) in cases.items():
        bad = bytearray(data)
        bad[offset:offset + len(patch)] = patch
        path = tmp_path / "bad.gguf"
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError):
            quant.read_gguf(path)
