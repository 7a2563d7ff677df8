"""`sextant demo`: Sextant, its monitoring stack and one real Airflow deployment on this machine."""
