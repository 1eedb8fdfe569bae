from __future__ import annotations

from django.urls import path

from demo import views

urlpatterns = [
    path("", views.home),
    path("login", views.login),
    path("logout", views.logout),
    path("accounts", views.accounts),
]
