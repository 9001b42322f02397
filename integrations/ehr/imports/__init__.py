"""CSV imports of EHR exports: presets per EHR, the importer, and its jobs in the task cluster."""
