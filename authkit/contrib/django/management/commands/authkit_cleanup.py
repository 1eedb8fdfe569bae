"""``manage.py authkit_cleanup``: ``authkit cleanup`` on the storage of the Django settings."""

from authkit.contrib.django._commands import MaintenanceCommand


class Command(MaintenanceCommand):
    command = "cleanup"
