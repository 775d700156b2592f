"""The segcore app: thin UIs (Gradio, Streamlit) over app/services.py."""
