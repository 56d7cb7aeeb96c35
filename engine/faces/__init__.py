"""Faces: where the face and its lower half are in every frame of a video.

``detector`` (BlazeFace full-range) and ``mesh`` (468-point FaceMesh) run Google's MediaPipe
models converted to torch (``graph`` replays them; ``weights/`` holds them, with their NOTICE);
``fan`` is the optional face-alignment backend; ``locate`` picks the face to follow frame by
frame; ``track`` turns a video's worth of landmarks into smoothed boxes and fades, cached;
``turns`` maps points between a frame and its quarter-turned views (faces lying sideways).
"""
