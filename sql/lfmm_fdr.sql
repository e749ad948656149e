-- polgen query: lfmm_fdr
-- Candidates of an LFMM (or any per-SNP) result at a false discovery rate: the rows whose
-- Benjamini-Hochberg q-value (R p.adjust(p, "BH"), times pi0 for Storey's q-values) is <= fdr,
-- most significant first, with the q-value in column Q.
-- Which P: the column p_col names when given; else the calibrated P where the source has a
-- P_CALIBRATED column and the row a value there, else P, else 10^-LOG10P (as top_hits).
-- Rows whose P is NULL, NaN or outside [0, 1] are not tested: they count neither in m nor as hits.
-- Storey's q-values: pass the pi0 that `polgen lfmm qvalue --method storey` (or
-- polgen.lfmm.pi0_estimate) reports; the default pi0 = 1 gives Benjamini-Hochberg.
-- param source   relation             per-SNP results: parquet file, glob, directory, or frame name
-- param fdr      double    = 0.05     keep rows whose Q is <= fdr
-- param pi0      double    = 1.0      proportion of true nulls (1: Benjamini-Hochberg)
-- param p_col    column    = null     the P column to adjust (e.g. P_CALIBRATED_temp); default: see above
-- output: the source columns and Q, sorted by the P used, then by the other columns
WITH src AS (
    SELECT * FROM {{source}}
    UNION ALL BY NAME
    SELECT NULL::DOUBLE AS P, NULL::DOUBLE AS LOG10P WHERE false
),
used AS (
    SELECT *, CAST(CASE WHEN $p_col IS NULL
                     THEN coalesce({{source:column(P_CALIBRATED)}}, P, pow(10.0, -LOG10P))
                     ELSE {{p_col}} END AS DOUBLE) AS _p
    FROM src
),
tested AS (
    SELECT *, row_number() OVER (ORDER BY _p) AS _i, count(*) OVER () AS _m
    FROM used WHERE polgen_valid_p(_p)
),
adjusted AS (
    SELECT * EXCLUDE (_i, _m),
           least(1.0, min(_p * _m / _i) OVER (ORDER BY _p DESC, _i DESC
                                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)) * $pi0 AS Q
    FROM tested
)
SELECT * EXCLUDE (_p) FROM adjusted
WHERE Q <= $fdr
ORDER BY _p, COLUMNS(*)
