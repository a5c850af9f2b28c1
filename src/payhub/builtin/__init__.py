"""Built-in plugins: the file source, the flat and percentage calculators, and the csv_export rail."""
