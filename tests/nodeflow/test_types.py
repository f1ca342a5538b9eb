import pytest

from nodeflow.types import ANY, SocketType, TypeRegistry


@pytest.fixture
def registry() -> TypeRegistry:
    types = TypeRegistry()
    types.add(SocketType("UNet"), "a")
    types.add(SocketType("SDXLUNet", parents=("UNet",)), "a")
    types.add(SocketType("TinyXL", parents=("SDXLUNet",)), "b")
    types.add(SocketType("VAE"), "a")
    types.add(SocketType("INT"), "engine")
    types.add(SocketType("FLOAT"), "engine")
    return types


@pytest.mark.parametrize(
    "output, input_, ok",
    [
        ("UNet", "UNet", True),
        ("SDXLUNet", "UNet", True),
        ("TinyXL", "UNet", True),  # subtypes are transitive
        ("UNet", "SDXLUNet", False),  # never the other way round
        ("VAE", "UNet", False),
        ("VAE", ANY, True),
        (ANY, "VAE", True),
        ("INT", "FLOAT", True),
        ("FLOAT", "INT", False),
    ],
)
def test_compatibility_by_name_subtype_and_any(registry, output, input_, ok):
    assert registry.compatible(output, input_) is ok


def test_a_type_registered_differently_by_two_plugins_names_both(registry):
    with pytest.raises(ValueError, match=r"'a'.*'c'"):
        registry.add(SocketType("VAE", color="#000000"), "c")
    registry.add(SocketType("VAE"), "c")  # the identical declaration is fine
