"""``manage.py authkit_reencrypt``: ``authkit reencrypt`` on the storage of the Django settings."""

from authkit.contrib.django._commands import MaintenanceCommand


class Command(MaintenanceCommand):
    command = "reencrypt"
