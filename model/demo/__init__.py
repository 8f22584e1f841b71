"""The bundled demo in one place: its synthetic talking videos and speech, its training recipe,
and the check that its video is worth looking at."""
