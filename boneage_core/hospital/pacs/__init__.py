"""The DICOM node (``boneage dicom-node``): a Storage SCP that reads each hand film it receives like the Read
page, and sends a structured report and a secondary capture back to the PACS, then an amended report once
a reader has confirmed or corrected the case.

May import every stage below ``hospital`` (part of that stage: ``review``, ``model``... and the
``hospital`` modules ``header`` and ``archive``); only ``cli`` imports it. Its modules:
``config`` (the YAML), ``vault`` (the encrypted spool: return headers, received films, outbox payloads),
``objects`` (the SR and the SC, highdicom), ``burn`` (the burned-in picture), ``sender`` (C-STORE SCU,
retries, the outbox), ``receiver`` (the SCP, its filters and the bounded queue), ``node`` (the worker,
the readings poller, the command).
"""
