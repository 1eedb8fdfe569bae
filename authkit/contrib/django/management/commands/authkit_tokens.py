"""``manage.py authkit_tokens revoke --user ID``: ``authkit tokens revoke`` on the storage of the Django settings."""

from authkit.contrib.django._commands import MaintenanceCommand


class Command(MaintenanceCommand):
    command = "tokens"
