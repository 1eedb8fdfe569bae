"""``manage.py authkit_stats``: ``authkit stats`` on the storage of the Django settings."""

from authkit.contrib.django._commands import MaintenanceCommand


class Command(MaintenanceCommand):
    command = "stats"
