-- polgen query: top_hits
-- Rows of per-SNP results whose P value passes a threshold, most significant first.
-- Works on a P column, a LOG10P column (regenie style: -log10 P), or both; the output has both,
-- the missing one computed. Rows whose P is NULL, NaN or outside [0, 1] are never hits.
-- P = 0 sorts first (LOG10P = +inf). Ties are broken by the other columns, so the order is fixed.
-- Column names match case-insensitively (p, log10p work; the output names them P, LOG10P).
-- param source   relation             per-SNP results: parquet file, glob, directory, or frame name
-- param p_max    double    = 5e-8     keep rows with P <= p_max
-- param limit    count     = 1000     at most this many rows; 0 keeps them all
-- output: the source columns (P and LOG10P appended when absent), sorted by LOG10P descending
WITH src AS (
    SELECT * FROM {{source}}
    UNION ALL BY NAME
    SELECT NULL::DOUBLE AS P, NULL::DOUBLE AS LOG10P WHERE false
),
scored AS (
    SELECT * REPLACE (
        CAST(coalesce(P, pow(10.0, -LOG10P)) AS DOUBLE) AS P,
        CAST(coalesce(LOG10P, CASE WHEN P > 0 THEN -log10(P) WHEN P = 0 THEN 'inf'::DOUBLE END) AS DOUBLE)
            AS LOG10P
    )
    FROM src
)
SELECT * FROM scored
WHERE P >= 0 AND P <= 1 AND NOT isnan(P) AND NOT isnan(LOG10P)
  AND P <= $p_max
ORDER BY LOG10P DESC, COLUMNS(*)
LIMIT CASE WHEN $limit > 0 THEN $limit END
