"""NVIDIA GPUs through NVML: what a host has, and readings of each GPU over time.

This is the only module that imports pynvml (package nvidia-ml-py), and only
inside functions: the agent is standard library only, and the coordinator
ships pynvml to the hosts and puts it on sys.path before this module is used.
A host without pynvml, without an NVIDIA driver or without GPUs simply has no
GPU metrics, and says why; nothing here raises to its caller.

    reader, reason = open_gpu_reader()
    if reader is None:
        print(reason)  # e.g. "NVML could not start: Driver Not Loaded"
    else:
        print(reader.sample())  # [{"index": 0, "util_percent": 87.0, "power_watts": 212.5, ...}]
        reader.close()
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Optional, Tuple

NOT_INSTALLED = "pynvml is not installed"
NO_GPUS = "no NVIDIA GPUs found"
# pynvml.NVML_TEMPERATURE_GPU; used if an old or fake module lacks the constant.
_TEMPERATURE_GPU = 0


class GpuUnavailable(Exception):
    """NVML cannot be used on this host; the message is the reason a person reads."""


def _load() -> Any:
    try:
        import pynvml  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError as exc:
        raise GpuUnavailable(NOT_INSTALLED) from exc
    except Exception as exc:  # a broken install is still "no GPU metrics", not a crash
        raise GpuUnavailable("pynvml could not be imported: {}".format(_describe(exc))) from exc
    return pynvml


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _text(value: Any) -> Optional[str]:
    # Older pynvml releases return bytes for names, UUIDs and versions.
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def unavailable(reason: str) -> Dict[str, Any]:
    """The probe document of a host without usable GPUs."""
    return {"available": False, "reason": reason, "driver": None, "count": 0, "gpus": []}


class GpuReader:
    """Reads every GPU's utilisation, memory, power and temperature.

    NVML is started once, in the constructor, and stays open between samples
    (starting it can take seconds); close() shuts it down. The constructor
    raises GpuUnavailable; open_gpu_reader() turns that into a reason.
    """

    def __init__(self) -> None:
        nvml = _load()
        try:
            nvml.nvmlInit()
        except Exception as exc:
            raise GpuUnavailable("NVML could not start: {}".format(_describe(exc))) from exc
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
            raise GpuUnavailable("NVML could not list GPUs: {}".format(_describe(exc))) from exc
        self._nvml: Any = nvml
        self._handles: List[Any] = handles
        self._open = True

    @property
    def count(self) -> int:
        return len(self._handles)

    def _query(self, fn_name: str, *args: Any) -> Any:
        """One NVML query, or None when NVML refuses it (NotSupported, GPU lost, ...).

        Each field is asked on its own so that a GPU without, say, a power
        sensor still reports its utilisation and temperature.
        """
        try:
            return getattr(self._nvml, fn_name)(*args)
        except self._nvml.NVMLError:
            return None

    def describe(self) -> Dict[str, Any]:
        """The probe document: driver, count, and each GPU's name, UUID and memory."""
        gpus = []
        for index, handle in enumerate(self._handles):
            memory = self._query("nvmlDeviceGetMemoryInfo", handle)
            gpus.append(
                {
                    "index": index,
                    "name": _text(self._query("nvmlDeviceGetName", handle)),
                    "uuid": _text(self._query("nvmlDeviceGetUUID", handle)),
                    "memory_total_bytes": int(memory.total) if memory is not None else None,
                }
            )
        return {
            "available": bool(gpus),
            "reason": None if gpus else NO_GPUS,
            "driver": _text(self._query("nvmlSystemGetDriverVersion")),
            "count": len(gpus),
            "gpus": gpus,
        }

    def sample(self) -> List[Dict[str, Any]]:
        """One reading per GPU; a field NVML cannot give is None. [] once closed."""
        temperature_sensor = getattr(self._nvml, "NVML_TEMPERATURE_GPU", _TEMPERATURE_GPU)
        readings = []
        for index, handle in enumerate(self._handles):
            util = self._query("nvmlDeviceGetUtilizationRates", handle)
            memory = self._query("nvmlDeviceGetMemoryInfo", handle)
            milliwatts = self._query("nvmlDeviceGetPowerUsage", handle)
            temperature = self._query("nvmlDeviceGetTemperature", handle, temperature_sensor)
            readings.append(
                {
                    "index": index,
                    "util_percent": float(util.gpu) if util is not None else None,
                    "mem_used_bytes": int(memory.used) if memory is not None else None,
                    "mem_total_bytes": int(memory.total) if memory is not None else None,
                    "power_watts": milliwatts / 1000.0 if milliwatts is not None else None,
                    "temperature_c": int(temperature) if temperature is not None else None,
                }
            )
        return readings

    def close(self) -> None:
        """Shut NVML down; safe to call twice."""
        if not self._open:
            return
        self._open = False
        self._handles = []
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


def open_gpu_reader() -> Tuple[Optional[GpuReader], Optional[str]]:
    """(reader, None) on a host with GPUs, else (None, why not). Never raises."""
    try:
        reader = GpuReader()
    except GpuUnavailable as exc:
        return None, str(exc)
    except Exception as exc:  # a misbehaving pynvml must not reach the agent
        return None, "NVML failed: {}".format(_describe(exc))
    if reader.count == 0:
        reader.close()
        return None, NO_GPUS
    return reader, None


def probe() -> Dict[str, Any]:
    """What GPUs this host has, or why it reports none. Never raises.

    {"available": bool, "reason": str|None, "driver": str|None, "count": int,
     "gpus": [{"index", "name", "uuid", "memory_total_bytes"}]}
    """
    reader, reason = open_gpu_reader()
    if reader is None:
        return unavailable(reason or NO_GPUS)
    try:
        return reader.describe()
    except Exception as exc:
        return unavailable("NVML failed: {}".format(_describe(exc)))
    finally:
        reader.close()
