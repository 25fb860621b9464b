"""TaskFlow decorators of the PanDA provider (``@task.panda``)."""
