"""The simulated cluster's clock: simulated seconds run ``speed`` times faster than real ones.

Every delay of the world (image pulls, model loads, probe periods, back-offs, grace periods)
is expressed in simulated seconds and turned into real seconds by :meth:`Clock.real`.
Timestamps written into objects are real UTC wall time, as a real cluster writes them.
"""

import calendar
import time


class Clock(object):
    """Simulated time: ``speed`` 20 makes every simulated delay 20 times shorter (default 1)."""

    def __init__(self, speed=1.0):
        speed = float(speed)
        if speed <= 0:
            raise ValueError("the clock speed must be greater than 0, e.g. 20")
        self.speed = speed
        self._start = time.monotonic()

    def real(self, sim_seconds):
        """Real seconds that ``sim_seconds`` simulated seconds take."""
        return max(float(sim_seconds), 0.0) / self.speed

    def sleep(self, sim_seconds):
        """Sleep for ``sim_seconds`` simulated seconds."""
        time.sleep(self.real(sim_seconds))

    def monotonic(self):
        """Simulated seconds since the clock started."""
        return (time.monotonic() - self._start) * self.speed

    def now_iso(self):
        """Real UTC wall time as RFC 3339 with second precision: ``2026-11-22T18:00:00Z``."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def now_micro_iso(self):
        """Real UTC wall time with microseconds (MicroTime, log timestamps)."""
        now = time.time()
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%06dZ" % int((now % 1) * 1e6)


def epoch_of(stamp):
    """Epoch seconds of an RFC 3339 UTC time, with or without a fraction (``2026-11-23T18:00:00Z``,
    ``2026-11-23T18:00:00.123456789Z``); ValueError when it is not one."""
    if stamp.endswith("+00:00"):
        stamp = stamp[:-len("+00:00")] + "Z"
    whole, _dot, fraction = stamp.rstrip("Z").partition(".")
    if fraction and not fraction.isdigit():
        raise ValueError("not an RFC 3339 time: %r" % stamp)
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))
