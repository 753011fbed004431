"""Bar kernels: ticks to 10 ms bins to clock-aligned bars, with event-time watermarks.

Pure numpy; no Kafka, no files. The offline builder and the streaming workers call the same code.
"""
