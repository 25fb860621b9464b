"""Rucio as panda-server's lost-file recovery sees it on this machine: there is no storage, so Rucio
knows no dataset. The harness appends an import of this function to the installed
``pandaserver/dataservice/RecoverLostFilesCore.py`` (which else builds a real ``RucioClient`` and, with
no Rucio configured, fails every request with "failed to get files from rucio: Configuration not
found"). With it, a recovery request (``file_server/upload_file_recovery_request``, not a dry run)
finds every ``finished`` output file of the task lost, resets them and their inputs, and retries the task."""


def get_files_from_rucio(ds_name):
    """What ``RecoverLostFilesCore.get_files_from_rucio`` answers for a dataset Rucio does not know."""
    return False, f"unknown dataset {ds_name}"
