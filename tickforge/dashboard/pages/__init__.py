"""Pages of ``tickforge dashboard`` beside the live view (Streamlit runs each file as a page; this one is skipped)."""
