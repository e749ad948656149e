-- polgen query: per_chrom_summary
-- Per chromosome: SNP count, valid P count, smallest P, counts below two thresholds, and the
-- genomic inflation factor lambda_GC = median(chisq) / 0.4549364 with chisq = qchisq(1 - P, 1)
-- (from Z^2 when a row has no usable P). A last row with CHR = 'all' covers the whole table.
-- P is the one top_hits uses (p_col; else P_CALIBRATED where present, else P, else from LOG10P):
-- min_p, both counts and lambda_GC all describe it (a calibrated LFMM result: the calibrated P).
-- NULL, NaN or out-of-range P count in n_invalid_p only.
-- Chromosomes sort numerically (1..22, X, Y, XY, MT), labels like 'chr7' are understood.
-- param source        relation             per-SNP results with CHR and P, LOG10P or Z
-- param p_genomewide  double    = 5e-8     threshold counted in n_genomewide (P <= it)
-- param p_suggestive  double    = 1e-5     threshold counted in n_suggestive (P <= it)
-- param p_col         column    = null     the P column to use (e.g. P, or P_CALIBRATED_temp of a
--                                          multi-variable LFMM result); default: as above
-- output: CHR, n_snps, n_invalid_p, min_p, n_genomewide, n_suggestive, median_chisq, lambda_gc
WITH src AS (
    SELECT * FROM {{source}}
    UNION ALL BY NAME
    SELECT NULL::DOUBLE AS P, NULL::DOUBLE AS LOG10P, NULL::DOUBLE AS Z WHERE false
),
p AS (
    SELECT CHR,
           polgen_chrom_code(CHR) AS chrom_code,
           CAST(CASE WHEN $p_col IS NULL
                          THEN coalesce({{source:column(P_CALIBRATED)}}, P, pow(10.0, -LOG10P))
                          ELSE {{p_col}} END AS DOUBLE) AS p_raw,
           CAST(Z AS DOUBLE) AS z
    FROM src
),
valid AS (
    SELECT *,
           CASE WHEN polgen_valid_p(p_raw) THEN p_raw END AS pv
    FROM p
),
stats AS (
    SELECT *, coalesce(chisq_from_p(pv), CASE WHEN NOT isnan(z) THEN z * z END) AS chisq FROM valid
)
SELECT
    CASE WHEN grouping(chrom_code) = 1 THEN 'all'
         ELSE CAST(min(CAST(CHR AS VARCHAR)) AS VARCHAR) END AS CHR,
    count(*) AS n_snps,
    count(*) - count(pv) AS n_invalid_p,
    min(pv) AS min_p,
    count(*) FILTER (WHERE pv <= $p_genomewide) AS n_genomewide,
    count(*) FILTER (WHERE pv <= $p_suggestive) AS n_suggestive,
    median(chisq) AS median_chisq,
    median(chisq) / 0.4549364 AS lambda_gc
FROM stats
GROUP BY GROUPING SETS ((chrom_code), ())
ORDER BY grouping(chrom_code), chrom_code NULLS LAST, CHR
