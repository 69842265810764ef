"""Anomaly detection: features, streaming detectors, training, ONNX export, a signed registry, runtime.

The edge imports only what needs numpy and onnxruntime (never scikit-learn; signatures are checked
with cryptography in a short-lived child, ``models.verify_signature``, so the daemon never loads it):

- ``models.runtime``: ``Scorer`` (detectors + an optional ONNX model, hot swap, rollback), ``Model``,
  ``load_model``
- ``models.detectors``: ``DetectorBank``, ``DetectorConfig``, ``ANOMALY_TYPES``
- ``models.features``: ``FeatureSpec``, ``FeatureExtractor``, ``compute_features``
- ``models.registry``: ``Registry`` (verified ``load``); ``models.signing``: ``verify_model``, keys
- ``models.manifest``: ``Manifest``, ``Calibration``; ``models.tabular``: ``score_csv``

The hub adds ``models.train`` (``train_from_readings``, ``train_from_csv``, ``train_model``),
``models.export`` (``export_model``) and ``models.evaluation``. See docs/detection.md.
This package imports none of its modules itself, so importing one never pulls in the others.
"""
