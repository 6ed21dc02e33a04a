"""Hospital: a site's own films and readers. Import an archive (nested DICOM folders, DICOMDIR) into the
review log, de-identified, without duplicates and with a summary; adapt the model to the site's readings
(recalibration or fine-tuning, with cross-validated figures before and after); and the DICOM node
(``pacs/``: films received from the PACS, reports and captures sent back).

May import every stage below it, ``training`` included. Only ``cli`` sits above it.
"""
