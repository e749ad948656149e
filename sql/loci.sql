-- polgen query: loci
-- Significant SNPs grouped into loci by distance: hits (P <= p_max) are taken in genome order and
-- a hit starts a new locus when it is on another chromosome or more than window_bp after the
-- previous hit (distance clumping, no LD). One row per locus: its span, hit count and lead SNP
-- (largest LOG10P; ties go to the earlier position). P or LOG10P as in top_hits; rows with an
-- unusable P, chromosome or position are not hits.
-- Which P: the column p_col names when given; else the calibrated P where the source has a
-- P_CALIBRATED column and the row a value there (a calibrated LFMM result), else P, else
-- 10^-LOG10P. Threshold and order use that one P: LOG10P is the source's LOG10P (which describes
-- that P in polgen's LFMM and in regenie outputs) or -log10 of it; with p_col, -log10(p_col).
-- param source     relation              per-SNP results with SNP, CHR, BP and P or LOG10P
-- param p_max      double    = 5e-8      a hit has P (the one used) <= p_max
-- param window_bp  count     = 500000    largest gap (bp) between consecutive hits of one locus
-- param p_col      column    = null      the P column to use (e.g. P, or P_CALIBRATED_temp of a
--                                        multi-variable LFMM result); default: see above
-- output: locus, CHR, start, end, n_hits, lead_SNP, lead_BP, lead_P (the P used), lead_LOG10P;
--   genome order
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
    SELECT CAST(SNP AS VARCHAR) AS snp, CHR AS chr, polgen_chrom_code(CHR) AS code,
           TRY_CAST(BP AS BIGINT) AS pos,
           _p AS p,
           CAST(CASE WHEN $p_col IS NULL THEN coalesce(LOG10P, polgen_log10p(_p))
                     ELSE polgen_log10p(_p) END AS DOUBLE) AS lp
    FROM used
),
hits AS (
    SELECT * FROM scored
    WHERE polgen_valid_p(p) AND NOT isnan(lp) AND p <= $p_max
      AND code IS NOT NULL AND pos IS NOT NULL
),
marked AS (
    SELECT *,
           CASE WHEN lag(code) OVER w IS DISTINCT FROM code OR pos - lag(pos) OVER w > $window_bp
                THEN 1 ELSE 0 END AS new_locus
    FROM hits
    WINDOW w AS (ORDER BY code, pos, snp)
),
numbered AS (
    SELECT *, sum(new_locus) OVER (ORDER BY code, pos, snp ROWS UNBOUNDED PRECEDING) AS locus
    FROM marked
)
SELECT CAST(locus AS BIGINT) AS locus,
       first(chr ORDER BY pos, snp) AS CHR,
       min(pos) AS start,
       max(pos) AS "end",
       count(*) AS n_hits,
       first(snp ORDER BY lp DESC, pos, snp) AS lead_SNP,
       first(pos ORDER BY lp DESC, pos, snp) AS lead_BP,
       first(p ORDER BY lp DESC, pos, snp) AS lead_P,
       max(lp) AS lead_LOG10P
FROM numbered
GROUP BY locus
ORDER BY locus
