"""The Streamlit live view (``tickforge dashboard``): :mod:`.app` (the page), :mod:`.view` (frames,
charts and badges as plain functions) and :mod:`.data` (the Kafka-fed bounded cache and the
PostgreSQL history)."""
