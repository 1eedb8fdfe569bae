"""``manage.py authkit_sessions revoke --user ID``: ``authkit sessions revoke`` on the Django settings' storage."""

from authkit.contrib.django._commands import MaintenanceCommand


class Command(MaintenanceCommand):
    command = "sessions"
