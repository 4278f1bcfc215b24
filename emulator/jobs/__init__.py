"""The emulator's AWS IoT Jobs engine (see engine.py and emulator/README.md, "Jobs").

* ``engine_for(iot_backend)``: the engine of one account/region (kept on the
  IoT backend, so ``/moto-api/reset`` drops it with the rest of the state).
* ``add_listener(fn)``: ``fn(account, region, topic, payload)`` gets every
  jobs notification (``$aws/things/<thing>/jobs/notify`` and ``notify-next``);
  the device gateway publishes them to MQTT subscribers.
* ``JobsError``: a refused device request (code as in the Jobs MQTT API).

The control plane is fixes/iot_jobs.py; the MQTT data plane gateway/jobs.py.
"""

from __future__ import annotations

from .clock import Clock
from .engine import Engine, JobsError, add_listener, engine_for, remove_listener

__all__ = ["Clock", "Engine", "JobsError", "add_listener", "engine_for", "remove_listener"]
