-- polgen query: loci
-- Significant SNPs grouped into loci by distance: hits (P <= p_max) are taken in genome order and
-- a hit starts a new locus when it is on another chromosome or more than window_bp after the
-- previous hit (distance clumping, no LD). One row per locus: its span, hit count and lead SNP
-- (largest LOG10P; ties go to the earlier position). P or LOG10P as in top_hits; rows with an
-- unusable P, chromosome or position are not hits.
-- param source     relation              per-SNP results with SNP, CHR, BP and P or LOG10P
-- param p_max      double    = 5e-8      a hit has P <= p_max
-- param window_bp  count     = 500000    largest gap (bp) between consecutive hits of one locus
-- output: locus, CHR, start, end, n_hits, lead_SNP, lead_BP, lead_P, lead_LOG10P; genome order
WITH src AS (
    SELECT * FROM {{source}}
    UNION ALL BY NAME
    SELECT NULL::DOUBLE AS P, NULL::DOUBLE AS LOG10P WHERE false
),
scored AS (
    SELECT CAST(SNP AS VARCHAR) AS snp, CHR AS chr, polgen_chrom_code(CHR) AS code,
           TRY_CAST(BP AS BIGINT) AS pos,
           CAST(coalesce(P, pow(10.0, -LOG10P)) AS DOUBLE) AS p,
           CAST(coalesce(LOG10P, CASE WHEN P > 0 THEN -log10(P) WHEN P = 0 THEN 'inf'::DOUBLE END) AS DOUBLE)
               AS lp
    FROM src
),
hits AS (
    SELECT * FROM scored
    WHERE p >= 0 AND p <= 1 AND NOT isnan(p) AND NOT isnan(lp) AND p <= $p_max
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
