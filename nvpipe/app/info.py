"""``nvpipe info``: what this machine can do, and why not."""

from __future__ import annotations

import platform


def _cpu_engines() -> str:
    """The installed CPU engines of the network, and what auto chose here so far."""
    from nvpipe.engine.matting import engines

    installed = [name for name in engines.ENGINES[1:] if engines.available(name)]
    chosen = {}
    for key, entry in engines.read_choices().items():
        if (isinstance(entry, dict) and key.startswith(engines.cpu_model() + "|")
                and engines.library_versions() in key):  # this machine, these libraries
            size = next((part for part in key.split("|") if "x" in part and part[0].isdigit()),
                        None)
            if size:
                chosen[size] = entry.get("engine")
    text = ", ".join(installed)
    if chosen:
        text += "; auto chose " + ", ".join(f"{engine} at {size}"
                                             for size, engine in sorted(chosen.items()))
    return text


def _try(what):
    try:
        return what()
    except Exception as error:  # noqa: BLE001 - a report of what fails, by design
        return f"unavailable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"


def collect() -> dict:
    """A dict of facts: versions, CPU encoders, GPU (decoders, encoders, Triton), weights."""
    import av
    import torch

    facts: dict = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyav": f"{av.__version__} (FFmpeg libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})",
        "cpu threads": torch.get_num_threads(),
    }
    encoders = []
    for name in ("libx264", "libx265", "libsvtav1", "prores_ks", "libvpx-vp9", "png"):
        try:
            av.codec.Codec(name, "w")
            encoders.append(name)
        except Exception:  # noqa: BLE001
            pass
    facts["cpu encoders"] = ", ".join(encoders) or "none"
    facts["cpu network engines"] = _try(_cpu_engines)

    def gpu():
        from nvpipe.platform.gpu import describe

        return describe()

    facts["gpu"] = _try(gpu)  # with Triton's and PyNvVideoCodec's status

    def weights():
        import rvm

        return rvm.describe_weights("mobilenetv3")

    facts["weights"] = _try(weights)
    from nvpipe.platform.capacity import capacity  # clips at once (--jobs), and why
    facts["clips at once (--jobs)"] = _try(lambda: capacity().describe())
    return facts


def format_report(facts: dict | None = None) -> str:
    facts = facts if facts is not None else collect()
    lines = []
    for key, value in facts.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
