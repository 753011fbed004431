"""The Streamlit live view (``tickforge dashboard``): :mod:`.app` (the page), :mod:`.view` (frames,
charts and badges as plain functions), :mod:`.cache` (the bounded live cache), :mod:`.feed` (the
Kafka thread that fills it and polls the workers' lag), :mod:`.history` (golden bars from
PostgreSQL) and :mod:`.source` (the three put together for the page)."""
