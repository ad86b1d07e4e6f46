"""The pipeline SDK: report each step of each job to stepledger, without ever losing an event.

    from stepledger.sdk import Tracker

    with Tracker(client_id="st-mary", pipeline="botimage") as tracker:
        with tracker.job("study-4711") as job:
            with job.step("dicom-intake", units=240):
                fetch_images()
            with job.step("organ-segmentation"):
                segment()          # an exception here is reported as the step's error
            if nothing_found():
                job.skip_remaining("no lesion")   # the job ends here: later steps skipped

Events are written to a local spool before they are sent, sent in batches by a background
thread, retried with backoff while the API is away, and removed only once stored. See
docs/pipelines.md.
"""

from stepledger.sdk.job import Job, Step
from stepledger.sdk.tracker import Tracker, TrackerError, TrackerStats, UnknownStepError

__all__ = ["Job", "Step", "Tracker", "TrackerError", "TrackerStats", "UnknownStepError"]
