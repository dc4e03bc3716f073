"""Peer-style baselines served beside Spark Control in the same run: a bare ASGI hello-world, django-ninja on daphne
out of the box, and Channels' in-memory layer on daphne out of the box."""
