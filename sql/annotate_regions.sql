-- polgen query: annotate_regions
-- Per-SNP results joined with a list of regions on (chromosome, position): each SNP inside a
-- region is returned once per region holding it, with the region's name and bounds. The join is
-- one BETWEEN on chrom_code << 32 | pos (an IEJoin), much faster than chrom equality + range.
-- Chromosome labels may differ between the tables ('chr1' vs 1, X vs 23).
-- param source          relation            per-SNP results with CHR and BP
-- param regions         relation            regions with columns chrom, start, end, name
-- param zero_based      boolean   = false   regions are BED-style [start, end), 0-based; default is
--                                           1-based inclusive [start, end] like BP
-- param keep_unmatched  boolean   = false   also return SNPs outside every region (region NULL)
-- output: the source columns + region, region_chrom, region_start, region_end; genome order
WITH snps AS (
    SELECT *, polgen_genome_pos(CHR, BP) AS _gpos FROM {{source}}
),
regs AS (
    SELECT name AS region,
           chrom AS region_chrom,
           start AS region_start,
           "end" AS region_end,
           (polgen_chrom_code(chrom) << 32)
               | (CAST(start AS BIGINT) + CASE WHEN $zero_based THEN 1 ELSE 0 END) AS _lo,
           (polgen_chrom_code(chrom) << 32) | CAST("end" AS BIGINT) AS _hi
    FROM {{regions}}
    WHERE polgen_chrom_code(chrom) IS NOT NULL
)
SELECT s.* EXCLUDE (_gpos), r.region, r.region_chrom, r.region_start, r.region_end
FROM snps s
LEFT JOIN regs r ON s._gpos BETWEEN r._lo AND r._hi
WHERE $keep_unmatched OR r.region_start IS NOT NULL
ORDER BY s._gpos NULLS LAST, r.region_start, r.region_end, r.region, COLUMNS(s.*)
