-- polgen query: top_hits
-- Rows of per-SNP results whose P value passes a threshold, most significant first.
-- Works on a P column, a LOG10P column (regenie style: -log10 P), or both; the output has both,
-- the missing one computed. Rows whose P is NULL, NaN or outside [0, 1] are never hits.
-- P = 0 sorts first (LOG10P = +inf). Ties are broken by the other columns, so the order is fixed.
-- Column names match case-insensitively (p, log10p work; the output names them P, LOG10P).
-- Which P: the column p_col names when given; else the calibrated P where the source has a
-- P_CALIBRATED column and the row a value there (a calibrated LFMM result), else P, else
-- 10^-LOG10P. Threshold and order use that one P: LOG10P is the source's LOG10P (which describes
-- that P in polgen's LFMM and in regenie outputs) or -log10 of it; with p_col, -log10(p_col).
-- The output's P column stays the source's P (the uncalibrated one of an LFMM result); its
-- LOG10P is the one of the P used.
-- param source   relation             per-SNP results: parquet file, glob, directory, or frame name
-- param p_max    double    = 5e-8     keep rows whose P (the one used) is <= p_max
-- param limit    count     = 1000     at most this many rows; 0 keeps them all
-- param p_col    column    = null     the P column to use (e.g. P, or P_CALIBRATED_temp of a
--                                      multi-variable LFMM result); default: see above
-- output: the source columns (P and LOG10P appended when absent), sorted by LOG10P descending
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
scored AS (
    SELECT * REPLACE (
        CAST(coalesce(P, pow(10.0, -LOG10P)) AS DOUBLE) AS P,
        CAST(CASE WHEN $p_col IS NULL THEN coalesce(LOG10P, polgen_log10p(_p))
                     ELSE polgen_log10p(_p) END AS DOUBLE) AS LOG10P
    )
    FROM used
)
SELECT * EXCLUDE (_p) FROM scored
WHERE polgen_valid_p(_p) AND NOT isnan(LOG10P) AND _p <= $p_max
ORDER BY LOG10P DESC, COLUMNS(*)
LIMIT CASE WHEN $limit > 0 THEN $limit END
