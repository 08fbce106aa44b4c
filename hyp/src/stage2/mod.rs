//! Stage-2 policies: which guest-physical ranges the host's CPU and its devices may touch, per mode.
