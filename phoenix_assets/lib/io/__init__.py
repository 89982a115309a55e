"""Reading and writing: DBN files, the Delta lake, raw partitions and stored artifacts."""
