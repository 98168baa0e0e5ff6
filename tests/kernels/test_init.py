"""snnexp.kernels (snnexp/kernels/__init__.py): CuPy's availability, with the import error kept when CuPy fails."""


def test_cupy_available_is_false_with_the_import_error_kept_when_cupy_fails(monkeypatch):
    import snnexp.kernels as kernels

    def broken(name):
        raise ImportError(f"libcudart.so.13: cannot open shared object file (importing {name})")

    monkeypatch.setattr(kernels, "import_module", broken)
    kernels.cupy_available.cache_clear()
    try:
        assert kernels.cupy_available() is False
        assert "libcudart" in str(kernels.cupy_import_error())
    finally:
        kernels.cupy_available.cache_clear()
