"""Which offscreen backend renders the meshes (paper Fig. 9/10), negotiated once per process.

Backends, tried in this order by ``backend="auto"``:

1. ``"egl"``: pyrender on EGL (GPU driver, or Mesa llvmpipe through EGL's device/surfaceless platform: no display),
2. ``"osmesa"``: pyrender on OSMesa (Mesa's software off-screen library, Debian package ``libosmesa6``),
3. ``"matplotlib"``: the painter of ``nfd.viz.render``, which always works.

PyOpenGL fixes its platform when ``OpenGL`` is first imported, from ``PYOPENGL_PLATFORM``. So the choice is made
lazily on the first render: if nothing has imported OpenGL yet, ``PYOPENGL_PLATFORM`` is set here (unless the user
set it, which is then respected and the only GL platform tried) before pyrender is imported. If OpenGL was already
imported by someone else, only its platform can be used. The backend in use is logged once (logger
``nfd.viz.render``, info level) and each fallback once as a warning, e.g. "EGL unavailable (...), falling back to
OSMesa"; ``backend_used()`` tells which one rendered.
"""

from __future__ import annotations

import atexit
import ctypes.util
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nfd.errors import NfdError

log = logging.getLogger("nfd.viz.render")

BACKENDS = ("auto", "egl", "osmesa", "matplotlib")
_GL_NAMES = {"egl": "EGL", "osmesa": "OSMesa", "matplotlib": "matplotlib"}
_GL_LIBRARIES = {"egl": ("EGL", "libegl1 libegl-mesa0"), "osmesa": ("OSMesa", "libosmesa6")}


class RenderUnavailableError(NfdError):
    """The requested rendering backend cannot be used on this machine (message says why)."""


@dataclass
class BackendState:
    """What this process renders with: one for the whole process, since PyOpenGL binds one GL platform per process."""

    lock: threading.RLock = field(default_factory=threading.RLock)  # held while the GL renderer draws
    backend: str | None = None  # what auto resolved to (or the last explicit one)
    renderer: Any = None  # pyrender.OffscreenRenderer, reused
    gl_platform: str | None = None  # 'egl' / 'osmesa' once a GL renderer works
    gl_info: str = ""  # the GL_RENDERER string of that platform
    failed: dict[str, str] = field(default_factory=dict)  # backend -> why it failed
    announced: set[str] = field(default_factory=set)  # backends and fallbacks already logged


state = BackendState()


def backend_used() -> str | None:
    """The backend that renders (``"egl"``, ``"osmesa"`` or ``"matplotlib"``), or None before the first render."""
    return state.backend


def describe(backend: str) -> str:
    """The backend's name for people, with the GL renderer string once known (e.g. "EGL (llvmpipe ...)")."""
    extra = f" ({state.gl_info})" if backend != "matplotlib" and state.gl_info else ""
    return f"{_GL_NAMES[backend]}{extra}"


def _reset_backend() -> None:
    """Forget the chosen backend (tests). A GL platform that PyOpenGL has loaded stays loaded."""
    with state.lock:
        _delete_renderer()
        state.backend = None
        state.failed = {}
        state.announced = set()


def _delete_renderer() -> None:
    r, state.renderer = state.renderer, None
    if r is not None:
        try:
            r.delete()
        except Exception:  # noqa: BLE001 - teardown of a context that may already be gone
            pass


atexit.register(_delete_renderer)


def _loaded_gl_platform() -> str | None:
    """The platform PyOpenGL is already bound to ('egl', 'osmesa', another name), or None if not imported yet."""
    if "OpenGL.platform" not in sys.modules and "OpenGL.GL" not in sys.modules:
        return None
    plat = getattr(sys.modules.get("OpenGL.platform"), "PLATFORM", None)
    name = type(plat).__name__.lower() if plat is not None else ""
    if "egl" in name:
        return "egl"
    if "osmesa" in name:
        return "osmesa"
    return os.environ.get("PYOPENGL_PLATFORM") or name or "unknown"


def _purge_gl_modules() -> None:
    """Drop PyOpenGL and pyrender from ``sys.modules``, so that the next platform is imported afresh."""
    for name in list(sys.modules):
        if name == "OpenGL" or name.startswith("OpenGL.") or name == "pyrender" or name.startswith("pyrender."):
            del sys.modules[name]


def _open_gl(platform: str) -> Any:
    """Create a pyrender OffscreenRenderer on ``platform`` and draw one tiny frame; raise with the reason if not."""
    loaded = _loaded_gl_platform()
    if loaded is not None and loaded != platform and state.gl_platform is None:
        raise RenderUnavailableError(f"PyOpenGL is already initialised for {loaded!r} in this process")
    lib = _GL_LIBRARIES[platform]
    if loaded is None and ctypes.util.find_library(lib[0]) is None:
        raise RenderUnavailableError(f"lib{lib[0]} not found; on Debian/Ubuntu install {lib[1]}")
    prev_env = os.environ.get("PYOPENGL_PLATFORM")
    os.environ["PYOPENGL_PLATFORM"] = platform  # read by PyOpenGL on import and by pyrender on every renderer
    imported_here = loaded is None
    try:
        import pyrender  # noqa: PLC0415 - must come after PYOPENGL_PLATFORM is set

        renderer = pyrender.OffscreenRenderer(8, 8)
        try:
            scene = pyrender.Scene(bg_color=[1.0, 1.0, 1.0, 1.0])
            scene.add(pyrender.PerspectiveCamera(yfov=0.5), pose=np.eye(4))
            renderer.render(scene)
            info = ""
            try:
                from OpenGL import GL  # noqa: PLC0415

                info = GL.glGetString(GL.GL_RENDERER).decode(errors="replace")
            except Exception:  # noqa: BLE001 - the renderer string is only informative
                pass
        except BaseException:
            renderer.delete()
            raise
    except Exception as e:
        if prev_env is None:
            os.environ.pop("PYOPENGL_PLATFORM", None)
        else:
            os.environ["PYOPENGL_PLATFORM"] = prev_env
        if imported_here:  # let the next platform start from a clean PyOpenGL import
            _purge_gl_modules()
        reason = f"{type(e).__name__}: {e}".strip().rstrip(":") if str(e) else type(e).__name__
        raise RenderUnavailableError(reason.splitlines()[0] if reason else type(e).__name__) from e
    state.gl_info = info
    state.gl_platform = platform
    return renderer


def _fall_back(msg: str) -> None:
    """Log a fallback once per process, as one warning (the ``nfd`` command shows it as one line on stderr)."""
    if msg in state.announced:
        return
    state.announced.add(msg)
    log.warning("%s", msg)


def _announce(backend: str) -> None:
    if backend in state.announced:
        return
    state.announced.add(backend)
    log.info("rendering with %s", describe(backend))


def _auto_candidates() -> list[str]:
    """The backends ``auto`` may still try, in order: matplotlib is always last."""
    loaded = _loaded_gl_platform()
    if state.gl_platform is not None:
        return [state.gl_platform, "matplotlib"]
    if loaded is not None:
        if loaded in ("egl", "osmesa"):
            return [loaded, "matplotlib"]
        _fall_back(
            f"PyOpenGL was already imported for platform {loaded!r} (not egl/osmesa) before nfd.viz.render "
            "chose one, falling back to matplotlib"
        )
        return ["matplotlib"]
    user = os.environ.get("PYOPENGL_PLATFORM")
    if user:
        if user in ("egl", "osmesa"):
            return [user, "matplotlib"]
        _fall_back(f"PYOPENGL_PLATFORM={user} is not an offscreen platform (egl, osmesa), falling back to matplotlib")
        return ["matplotlib"]
    return ["egl", "osmesa", "matplotlib"]


def resolve(backend: str) -> str:
    """Pick (and initialise) the backend to use; returns its name."""
    if backend not in BACKENDS:
        raise NfdError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    with state.lock:
        if backend == "matplotlib":
            state.backend = "matplotlib"
            _announce("matplotlib")
            return "matplotlib"
        if backend in ("egl", "osmesa"):
            if state.renderer is not None and state.gl_platform == backend:
                state.backend = backend
                return backend
            if state.gl_platform is not None and state.gl_platform != backend:
                raise RenderUnavailableError(
                    f"{_GL_NAMES[backend]} unavailable: this process already renders with "
                    f"{_GL_NAMES[state.gl_platform]} (PyOpenGL binds one platform per process)"
                )
            try:
                state.renderer = _open_gl(backend)
            except RenderUnavailableError as e:
                raise RenderUnavailableError(f"{_GL_NAMES[backend]} unavailable ({e})") from e
            state.backend = backend
            _announce(backend)
            return backend
        # auto
        if state.backend is not None and state.backend != "matplotlib" and state.renderer is not None:
            return state.backend
        if state.backend == "matplotlib" and state.failed:  # auto already fell all the way back
            return "matplotlib"
        candidates = _auto_candidates()
        for i, cand in enumerate(candidates):
            if cand == "matplotlib":
                state.backend = "matplotlib"
                _announce("matplotlib")
                return "matplotlib"
            try:
                state.renderer = state.renderer if state.gl_platform == cand and state.renderer else _open_gl(cand)
            except RenderUnavailableError as e:
                state.failed[cand] = str(e)
                _fall_back(f"{_GL_NAMES[cand]} unavailable ({e}), falling back to {_GL_NAMES[candidates[i + 1]]}")
                continue
            state.backend = cand
            _announce(cand)
            return cand
        raise AssertionError("unreachable: matplotlib is always the last candidate")  # pragma: no cover
