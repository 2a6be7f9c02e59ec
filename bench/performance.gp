# Renders docs/performance.svg from the table bench/plot.sh extracts from handshake.json:
#   gnuplot -e "datafile='handshake.dat'; outfile='performance.svg'; subtitle='...'" bench/performance.gp
# Columns: group label, raw full, tlsresume full, raw resumed, tlsresume resumed, DER-design resumed
# (client + server CPU µs per connection, medians).

if (!exists("datafile")) datafile = 'handshake.dat'
if (!exists("outfile")) outfile = 'performance.svg'
if (!exists("subtitle")) subtitle = ''

set terminal svg size 1100,520 dynamic enhanced font "Helvetica,12" background "#ffffff"
set output outfile
set title "Client + server CPU per connection (µs, median), in-memory BIO pair\n{/*0.8 ".subtitle."}"
set style data histograms
set style histogram clustered gap 1.2
set style fill solid 0.85 border rgb "#333333"
set boxwidth 1
set ylabel "CPU µs per connection"
set yrange [0:*]
set grid ytics lc rgb "#dddddd"
set key outside right top vertical Left reverse samplen 2 spacing 1.5 font ",11"
set xtics nomirror scale 0 font ",10"
set ytics nomirror
set border 3
set lmargin 10
set bmargin 4

# The label of each group carries "\n" between protocol and key.
set datafile separator "\t"
stats datafile using 2 nooutput
set xrange [-0.6:STATS_records - 0.4]

n = 5.0
g = 1.2
x(i) = $0 + (i - (n - 1) / 2) / (n + g)
label(c) = sprintf("%.0f", column(c))

plot datafile using 2:xtic(stringcolumn(1)) title "raw OpenSSL, full" lc rgb "#9e9e9e", \
     '' using 3 title "tlsresume, full" lc rgb "#616161", \
     '' using 4 title "raw OpenSSL, resumed (the floor)" lc rgb "#90caf9", \
     '' using 5 title "tlsresume, resumed" lc rgb "#1565c0", \
     '' using 6 title "DER per connection (curl), resumed" lc rgb "#ef6c00", \
     '' using (x(2)):4:(label(4)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle, \
     '' using (x(3)):5:(label(5)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle, \
     '' using (x(4)):6:(label(6)) with labels rotate by 90 left offset 0,0.4 font ",8" notitle
