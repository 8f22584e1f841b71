"""The networks and tools the stages call, behind small interfaces: face detectors, MediaPipe
and FAN landmarks, Deep3D, audio features, and where their local weight files are found."""
