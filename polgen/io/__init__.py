"""Readers and writers: summary statistics, LD scores, PLINK .bed, AnnData, parquet sinks."""
