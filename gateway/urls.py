"""/v1/: the OpenAI-compatible routes (included from sparkcontrol/urls.py)."""

from django.urls import path

from gateway import views

urlpatterns = [
    path("models", views.models, name="gateway-models"),
    path("models/<path:model>", views.model_detail, name="gateway-model"),
    path("chat/completions", views.chat_completions, name="gateway-chat-completions"),
    path("completions", views.completions, name="gateway-completions"),
    path("embeddings", views.embeddings, name="gateway-embeddings"),
    path("audio/transcriptions", views.audio_transcriptions, name="gateway-audio-transcriptions"),
    path("audio/translations", views.audio_translations, name="gateway-audio-translations"),
    path("audio/speech", views.audio_speech, name="gateway-audio-speech"),
]
